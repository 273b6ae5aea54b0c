SELECT count(*) AS order_items FROM "OrderItem"
