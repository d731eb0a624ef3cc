package main

func (b *bench) policyPropagation() error { return nil }
