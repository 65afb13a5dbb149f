"""One module per tab, each with ``render(ctx)`` (layout) and ``wire(ctx, tab)`` (events)."""
