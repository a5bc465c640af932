"""Tests of rrvae_nb.stem: 4D-STEM data (one file per module)."""
