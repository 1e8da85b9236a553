"""samverka.sweden"""
