"""Networks: autoencoder, diffusion UNet and conditioning (MONAI networks underneath)."""
