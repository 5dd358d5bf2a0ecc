"""logins/core"""
