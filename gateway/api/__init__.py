"""HTTP endpoints, one module each; handlers stay thin."""
