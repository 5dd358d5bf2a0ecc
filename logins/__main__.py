"""`python -m logins ...` is the `logins` command."""

from logins.cli import main

main()
