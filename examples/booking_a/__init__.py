"""Booking module A (vendor A): books an Appointment for each active referral; its state is one JSON file."""
