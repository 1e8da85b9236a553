"""samverka.interactions"""
