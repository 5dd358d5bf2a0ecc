"""logins/pii"""
