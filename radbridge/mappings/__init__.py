"""Pure translations between wire content and domain records: no I/O here."""
