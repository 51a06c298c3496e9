"""The house's back office: orders, stock, and (later) bespoke leads, behind a second factor."""
