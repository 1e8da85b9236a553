"""samverka.api"""
