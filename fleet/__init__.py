"""ecufl.fleet"""
