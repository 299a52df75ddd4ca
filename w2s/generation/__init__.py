"""Text generation: the batched decoder, co-writing (nudging and its reverse), and their question-answer evaluation."""
