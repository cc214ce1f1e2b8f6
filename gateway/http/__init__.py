"""Pure HTTP helpers: header handling and fixed replies. No IO, no trio."""
