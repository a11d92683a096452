from ecufl.cli import main

main()
