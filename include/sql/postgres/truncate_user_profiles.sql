-- A full rebuild replaces every row of user_profiles (in the run's transaction: readers wait, then see the new set).
TRUNCATE TABLE user_profiles
