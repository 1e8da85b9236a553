"""samverka.generate"""
