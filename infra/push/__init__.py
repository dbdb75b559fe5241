"""Push providers (Web Push, FCM, APNs) behind one small interface (`provider.py`)."""
