"""The request pipeline: one chat request from its parsed form (`request`) to settled money,
whatever the wire format it came in."""
