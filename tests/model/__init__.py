"""Tests of rrvae_nb.model: the rrVAE, its training and what surrounds it (one file per module)."""
