"""ecufl.client"""
