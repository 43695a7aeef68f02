"""Configuration: the YAML shape with path-qualified errors (`schema`), the built-in catalog
(`catalog`), what each provider speaks (`providers`), and the resolved, immutable `Settings`."""
