"""ecufl.server"""
