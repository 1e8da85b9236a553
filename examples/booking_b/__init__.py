"""Booking module B (vendor B): the same role as booking_a, with its state in SQLite and the shared record
imported when it takes the role over."""
