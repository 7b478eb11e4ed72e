"""The DeiT forward written once in ttnn ops, and the parameters it runs on: conversion, cache, dtype policy."""
