"""Verification of the verification: protocol mutants (``aegis mutants``) and the layers that must catch them."""
