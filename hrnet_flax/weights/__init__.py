"""Checkpoints: safe readers and writers, the key tables of every reference layout (derived from
the model), conversion both ways, our own format, the registry of published weights, downloads."""
