"""Interchange with other neuromorphic tool chains: the deployed IR to and from formats other tools
write and read (NIR, the Neuromorphic Intermediate Representation, in `nir_io`)."""
