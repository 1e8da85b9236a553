"""samverka.store"""
