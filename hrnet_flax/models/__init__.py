"""The network: the variants as a config table (`config`), the Linen modules (`hrnet`), and what
serves them: the registry, fast initialisation, BatchNorm folding, the stacked layout of scanned
models, the explicit-gradient convolution and parameter/MAC counts."""
