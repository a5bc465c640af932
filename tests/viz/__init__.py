"""Tests of rrvae_nb.viz: figures and widgets (one file per module)."""
