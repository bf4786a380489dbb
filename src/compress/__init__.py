"""Ways to shrink one hidden layer of the head; one module per method."""
