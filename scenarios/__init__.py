"""ecufl.scenarios"""
