-- The plan that priced each charge. A contract amended mid-month is rated part by part, each part
-- by the plan in force on its days, so the contract's own plan_id names only the plan it signed:
-- revenue per plan attributed the whole month to it. The month's true-up and discounts take the
-- plan in force at the month's end. Null on charges rated before this column existed.
ALTER TABLE rated_charges ADD COLUMN plan_id text;
