"""What the gateway tells its operators: Prometheus metrics (`metrics`, with exact money
metrics in `money_metrics`) and redacted logs (`logs`)."""
