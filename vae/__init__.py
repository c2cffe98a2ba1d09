"""kmer-vae: embed metagenome assemblies with a beta-VAE over canonical k-mer profiles."""

__version__ = "0.1.0"
