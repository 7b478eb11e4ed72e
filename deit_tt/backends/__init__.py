"""Where the forward's ops run: a card or tt-metal's mock device, or the host (ideal or Tensix numerics); tracing and recording."""
