"""Provider adapters behind one small interface (`base.Provider`); see `registry`."""
