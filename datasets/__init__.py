"""Video datasets in the published layout root/{train,test}/<video>."""
