"""The controller SDK."""
