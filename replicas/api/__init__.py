"""The replica's local HTTP API: one router per concern (sales, stock, catalog, shifts,
reports, conflicts, link), the pydantic models at its edge, and the till page
(`static/`). `app.create_app` assembles them."""
