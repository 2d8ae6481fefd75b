"""tuneforge.security"""
