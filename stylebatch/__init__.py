"""stylebatch: catalog-scale image restyling on Ray Data."""
