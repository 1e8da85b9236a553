"""samverka.search"""
