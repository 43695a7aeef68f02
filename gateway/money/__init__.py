"""Money: the pricing core (`pricing`, where every cost is computed, in integer pico-USD) and
the price table it is fed from (`price_table`)."""
