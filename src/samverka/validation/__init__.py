"""samverka.validation"""
