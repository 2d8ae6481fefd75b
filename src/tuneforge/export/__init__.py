"""tuneforge.export"""
