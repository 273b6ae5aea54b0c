-- cf_training: user_similarities is rebuilt whole from the promoted model, in one transaction.
DELETE FROM user_similarities
