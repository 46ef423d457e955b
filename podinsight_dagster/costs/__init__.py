"""Where money gets counted: prices, per-episode KPIs (with cost), the spend ledger and the budget."""
