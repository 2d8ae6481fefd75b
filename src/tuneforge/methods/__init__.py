"""tuneforge.methods"""
