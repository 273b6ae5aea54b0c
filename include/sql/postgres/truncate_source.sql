TRUNCATE TABLE "OrderItem", "Order", "ClientAgreement", "Client", "Product", events RESTART IDENTITY CASCADE
