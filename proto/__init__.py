"""ecufl.proto"""
