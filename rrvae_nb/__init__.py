"""rrvae-nb."""
